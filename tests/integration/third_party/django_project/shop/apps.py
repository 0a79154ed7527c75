from django.apps import AppConfig


class ShopConfig(AppConfig):
    name = "third_party.django_project.shop"
    label = "shop"
